//! A sequence of C API calls on one session, with callbacks that serve the peer's
//! bytes in hostile ways. The calls go through the exported `extern "C"` functions,
//! exactly as a C program makes them, NULL pointers and odd lengths included.
//!
//! Input layout: `setup` (1 byte), `wpattern` (4 bytes), `ops_len` (1 byte), then
//! `ops_len` bytes of operations, then the peer's stream.
//!
//! setup: bit 0 server (else client); bits 1-3 protocol (modulo 6); bit 4 implicit
//! TLS; bits 5-6 client policy (none, may, encrypt, verify) or server variant
//! (require-TLS, legacy hellos handed off); bit 7 a connector (client: the ladder
//! retries on a "new connection" that continues the same stream).
//!
//! The peer's stream is a series of segments: a control byte `c`, then data. Each
//! read callback takes the next control byte: `c & 7` is 0 EAGAIN, 1 EOF, 2 an error
//! (`c >> 3` 31: a claim of one byte more than the buffer, 30: ETIMEDOUT, else
//! ECONNRESET), 3 one byte, 4-7 `(c >> 3) + 1` bytes (at most the buffer). An exhausted
//! stream is EOF. The write callback cycles through `wpattern`: below 0x40 takes all,
//! below 0x80 EAGAIN, below 0xc0 half (at least one byte), below 0xe0 a short write of
//! one byte, else EPIPE.
//!
//! Properties: no panic (a `MAILTLS_RESULT_PANIC` is one too), every result code is a
//! known one, `*out_n` never exceeds the length given, output pointers stay untouched on
//! failure, and the sequence ends (each call returns).

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::OnceLock;

use mailtls::error::Code;
use mailtls::ffi::config::*;
use mailtls::ffi::report::*;
use mailtls::ffi::session::*;

/// The peer and what it has been sent.
pub struct Peer<'a> {
    stream: &'a [u8],
    pos: usize,
    wpattern: [u8; 4],
    writes: usize,
    /// Everything the library wrote (bounded: the count only beyond 1 MiB).
    pub written: usize,
}

fn peer<'a>(ud: *mut c_void) -> &'a mut Peer<'a> {
    // SAFETY: userdata is the `Peer` of the running `run`, alive for every call.
    unsafe { &mut *(ud as *mut Peer<'a>) }
}

extern "C" fn read_cb(ud: *mut c_void, buf: *mut u8, len: usize, out_n: *mut usize) -> i32 {
    let p = peer(ud);
    let Some(&c) = p.stream.get(p.pos) else {
        // SAFETY: out_n is the library's valid pointer.
        unsafe { *out_n = 0 };
        return 0;
    };
    p.pos += 1;
    let want = match c & 7 {
        0 => return libc::EAGAIN,
        1 => {
            // SAFETY: as above.
            unsafe { *out_n = 0 };
            return 0;
        }
        2 => {
            return match c >> 3 {
                31 => {
                    // SAFETY: as above. A lie: one byte more than the buffer holds.
                    unsafe { *out_n = len + 1 };
                    0
                }
                30 => libc::ETIMEDOUT,
                _ => libc::ECONNRESET,
            };
        }
        3 => 1,
        _ => (c >> 3) as usize + 1,
    };
    let n = want.min(len).min(p.stream.len() - p.pos);
    // SAFETY: the library gives `len` writable bytes at `buf`; n <= len.
    unsafe {
        std::ptr::copy_nonoverlapping(p.stream[p.pos..].as_ptr(), buf, n);
        *out_n = n;
    }
    p.pos += n;
    0
}

extern "C" fn write_cb(ud: *mut c_void, _buf: *const u8, len: usize, out_n: *mut usize) -> i32 {
    let p = peer(ud);
    let w = p.wpattern[p.writes % 4];
    p.writes += 1;
    let n = match w {
        0x00..=0x3f => len,
        0x40..=0x7f => return libc::EAGAIN,
        0x80..=0xbf => (len / 2).max(1).min(len),
        0xc0..=0xdf => len.min(1),
        _ => return libc::EPIPE,
    };
    p.written = p.written.saturating_add(n);
    // SAFETY: out_n is the library's valid pointer.
    unsafe { *out_n = n };
    0
}

extern "C" fn connect_cb(_ud: *mut c_void, host: *const c_char, _port: u16, out_fd: *mut i32) -> i32 {
    assert!(!host.is_null());
    // SAFETY: the library passes a NUL-terminated host name.
    let _ = unsafe { CStr::from_ptr(host) };
    // SAFETY: out_fd is the library's valid pointer.
    unsafe { *out_fd = 7 };
    0
}

extern "C" fn close_cb(_ud: *mut c_void, _fd: i32) {}

/// Configs are built once per variant (a certificate is generated for the server's).
struct Configs {
    client: [usize; 4],
    server: [usize; 4],
}

fn configs() -> &'static Configs {
    static C: OnceLock<Configs> = OnceLock::new();
    C.get_or_init(|| {
        let build = |role: u32, variant: u32| -> usize {
            let mut b: *mut mailtls_config_builder = std::ptr::null_mut();
            assert_eq!(mailtls_config_builder_new(role, &mut b), Code::Ok);
            if role == 0 {
                assert_eq!(mailtls_config_builder_set_policy(b, variant), Code::Ok);
                assert_eq!(mailtls_config_builder_set_helo_name(b, c"client.example".as_ptr()), Code::Ok);
            } else {
                let r = mailtls_config_builder_generate_self_signed(
                    b,
                    c"mx.example".as_ptr(),
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null_mut(),
                );
                assert_eq!(r, Code::Ok);
                assert_eq!(mailtls_config_builder_set_require_tls(b, variant & 1 != 0), Code::Ok);
                if variant & 2 != 0 {
                    for hello in 1..=4 {
                        assert_eq!(mailtls_config_builder_set_hello_action(b, hello, 1), Code::Ok);
                    }
                    assert_eq!(mailtls_config_builder_set_injection_action(b, 1), Code::Ok);
                }
            }
            assert_eq!(mailtls_config_builder_set_timeout_ms(b, 5000), Code::Ok);
            let mut cfg: *const mailtls_config = std::ptr::null();
            assert_eq!(mailtls_config_builder_build(b, &mut cfg), Code::Ok);
            mailtls_config_builder_free(b);
            cfg as usize
        };
        Configs {
            client: [0, 1, 2, 3].map(|v| build(0, v)),
            server: [0, 1, 2, 3].map(|v| build(1, v)),
        }
    })
}

fn known(r: Code) -> Code {
    assert_ne!(r, Code::Panic, "the library panicked");
    assert!(Code::from_u32(r as u32).is_some());
    r
}

struct Ops<'a> {
    b: &'a [u8],
    i: usize,
}

impl Ops<'_> {
    fn byte(&mut self) -> u8 {
        let v = self.b.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        v
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let start = self.i.min(self.b.len());
        let end = (start + n).min(self.b.len());
        self.i = start + n;
        &self.b[start..end]
    }
    fn done(&self) -> bool {
        self.i >= self.b.len()
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let setup = data.first().copied().unwrap_or(0);
    let mut wpattern = [0u8; 4];
    for (i, w) in wpattern.iter_mut().enumerate() {
        *w = data.get(1 + i).copied().unwrap_or(0);
    }
    let ops_len = data.get(5).copied().unwrap_or(0) as usize;
    let rest = data.get(6..).unwrap_or(&[]);
    let ops_len = ops_len.min(rest.len());
    let (ops, stream) = rest.split_at(ops_len);
    let server = setup & 1 != 0;
    let proto = u32::from((setup >> 1) & 7) % 6;
    let implicit = setup & 16 != 0;
    let variant = ((setup >> 5) & 3) as usize;
    let connector = setup & 0x80 != 0;

    let cfgs = configs();
    let mut s: *mut mailtls_session = std::ptr::null_mut();
    let r = if server {
        known(mailtls_server_new(cfgs.server[variant] as *const mailtls_config, proto, c"192.0.2.1:2525".as_ptr(), &mut s))
    } else {
        known(mailtls_client_new(cfgs.client[variant] as *const mailtls_config, proto, c"mx.example".as_ptr(), 25, &mut s))
    };
    assert_eq!(r, Code::Ok);
    assert!(!s.is_null());

    let mut p = Peer { stream, pos: 0, wpattern, writes: 0, written: 0 };
    let ud = &mut p as *mut Peer as *mut c_void;
    assert_eq!(known(mailtls_session_set_io(s, Some(read_cb), Some(write_cb), ud)), Code::Ok);
    if connector && !server {
        assert_eq!(known(mailtls_session_set_connector(s, Some(connect_cb), Some(close_cb), ud)), Code::Ok);
    }
    if implicit && !server {
        known(mailtls_session_set_implicit_tls(s, true));
    }

    // Without operations, the usual life of a session.
    let default_ops: &[u8] = if server { &[7, 0, 1, 1, 2, 3, 4, 5] } else { &[0, 1, 1, 1, 2, 3, 4, 5] };
    let mut o = Ops { b: if ops.is_empty() { default_ops } else { ops }, i: 0 };
    // Every operation is tried in every state, a closed or failed session included:
    // each must answer with a code (a closed or failed negotiation stays failed).
    let trace = std::env::var_os("MAILTLS_FUZZ_TRACE").is_some();
    let drive = |r: Code| {
        if trace {
            eprintln!("mailtls-fuzz: negotiation step: {r:?}");
        }
        r
    };
    let mut steps = 0;
    while !o.done() && steps < 96 {
        steps += 1;
        let op = o.byte() % 16;
        if trace {
            eprintln!("mailtls-fuzz: op {op}");
        }
        match op {
            0 => {
                if server {
                    let n = o.byte() as usize % 48;
                    let extra = o.bytes(n).to_vec();
                    drive(known(mailtls_server_starttls(s, extra.as_ptr(), extra.len())));
                } else {
                    drive(known(mailtls_client_negotiate(s)));
                }
            }
            1 => {
                drive(known(mailtls_session_continue(s)));
            }
            2 => {
                let len = o.byte() as usize * 5;
                let mut buf = vec![0u8; len.max(1)];
                let mut n = usize::MAX;
                let r = known(mailtls_session_read(s, buf.as_mut_ptr(), len, &mut n));
                if r == Code::Ok {
                    assert!(n <= len, "read {n} into {len}");
                } else {
                    assert_eq!(n, usize::MAX, "out_n written on failure");
                }
            }
            3 => {
                let n = o.byte() as usize % 64;
                let data = o.bytes(n).to_vec();
                let mut taken = usize::MAX;
                let r = known(mailtls_session_write(s, data.as_ptr(), data.len(), &mut taken));
                if r == Code::Ok {
                    assert!(taken <= data.len());
                } else {
                    assert_eq!(taken, usize::MAX, "out_n written on failure");
                }
            }
            4 => {
                known(mailtls_session_flush(s));
            }
            5 => {
                known(mailtls_session_close(s));
            }
            6 => {
                let _ = mailtls_session_wants_read(s);
                let _ = mailtls_session_wants_write(s);
                let _ = mailtls_session_tls_active(s);
                let e = mailtls_session_last_error(s);
                if !e.is_null() {
                    // SAFETY: a NUL-terminated string owned by the session.
                    let _ = unsafe { CStr::from_ptr(e) };
                }
                let rep = mailtls_session_report(s);
                if !rep.is_null() {
                    let j = mailtls_report_json(rep);
                    assert!(!j.is_null());
                    // SAFETY: a NUL-terminated string owned by the report.
                    let _ = unsafe { CStr::from_ptr(j) }.to_bytes().len();
                    let _ = mailtls_report_outcome(rep);
                    for i in 0..mailtls_report_capability_count(rep) + 1 {
                        let _ = mailtls_report_capability(rep, i);
                    }
                    for i in 0..mailtls_report_attempt_count(rep) + 1 {
                        let _ = mailtls_report_attempt_rung(rep, i);
                    }
                }
            }
            7 => {
                let n = o.byte() as usize % 40;
                let line = o.bytes(n).to_vec();
                if server {
                    let r = known(mailtls_server_check_command(s, line.as_ptr(), line.len()));
                    let reply = mailtls_server_reply(s, r as u32);
                    if !reply.is_null() {
                        // SAFETY: NUL-terminated, owned by the session.
                        let t = unsafe { CStr::from_ptr(reply) }.to_bytes();
                        assert!(t.ends_with(b"\r\n"), "a reply without CRLF: {t:?}");
                    }
                } else {
                    known(mailtls_session_set_will_authenticate(s, n & 1 != 0));
                }
            }
            8 => {
                let _ = mailtls_server_offer_starttls(s);
                let _ = mailtls_server_auth_allowed(s);
                let _ = mailtls_server_reset_required(s);
                if o.byte() & 1 != 0 {
                    known(mailtls_server_note_authenticated(s));
                }
            }
            9 => {
                // NULL pointers and odd lengths, on a live session and on none.
                let mut n = 0usize;
                assert_eq!(mailtls_session_read(std::ptr::null_mut(), std::ptr::null_mut(), 1, &mut n), Code::NullParameter);
                assert_eq!(known(mailtls_session_read(s, std::ptr::null_mut(), 16, &mut n)), Code::NullParameter);
                let mut b = [0u8; 4];
                assert_eq!(known(mailtls_session_read(s, b.as_mut_ptr(), 4, std::ptr::null_mut())), Code::NullParameter);
                assert_eq!(known(mailtls_session_read(s, b.as_mut_ptr(), 0, &mut n)), Code::InvalidParameter);
                assert_eq!(known(mailtls_session_write(s, std::ptr::null(), 5, &mut n)), Code::NullParameter);
                known(mailtls_session_write(s, std::ptr::null(), 0, &mut n));
                assert_eq!(known(mailtls_server_check_command(s, std::ptr::null(), 3)), Code::NullParameter);
                known(mailtls_server_check_command(s, std::ptr::null(), 0));
                assert_eq!(known(mailtls_server_starttls(std::ptr::null_mut(), std::ptr::null(), 0)), Code::NullParameter);
                assert_eq!(known(mailtls_client_negotiate(std::ptr::null_mut())), Code::NullParameter);
                assert_eq!(known(mailtls_session_continue(std::ptr::null_mut())), Code::NullParameter);
                assert_eq!(known(mailtls_session_set_io(s, None, Some(write_cb), ud)), Code::NullParameter);
                assert!(mailtls_session_report(std::ptr::null_mut()).is_null());
                assert!(mailtls_server_reply(s, 0xdead_beef).is_null());
                mailtls_session_free(std::ptr::null_mut());
            }
            10 => {
                drive(known(mailtls_server_start_implicit(s)));
            }
            11 => {
                let mut out: *const u8 = std::ptr::null();
                let mut len = 0usize;
                if known(mailtls_session_handoff_bytes(s, &mut out, &mut len)) == Code::Ok {
                    assert!(!out.is_null() && len > 0);
                    // SAFETY: the session owns `len` bytes at `out`.
                    let _ = unsafe { std::slice::from_raw_parts(out, len) }.iter().map(|&b| b as usize).sum::<usize>();
                } else {
                    assert!(out.is_null() && len == 0, "outputs written on failure");
                }
            }
            12 => {
                let a = o.byte();
                known(mailtls_session_set_start_rung(s, u32::from(a >> 1) % 6, a & 1 != 0));
            }
            13 => {
                let n = o.byte() as usize % 24;
                let name: Vec<u8> = o.bytes(n).iter().copied().filter(|&b| b != 0).collect();
                let name = CString::new(name).unwrap_or_default();
                known(mailtls_session_set_server_name(s, name.as_ptr()));
            }
            14 => {
                let _ = mailtls_server_reply(s, u32::from(o.byte()) + 600);
            }
            _ => {
                // Negotiate or continue until the transport has nothing more.
                for _ in 0..8 {
                    let r = if server { known(mailtls_session_continue(s)) } else { known(mailtls_client_negotiate(s)) };
                    if drive(r) != Code::WouldBlock {
                        break;
                    }
                }
            }
        }
    }
    mailtls_session_free(s);
}
